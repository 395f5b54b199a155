"""The torch side of gaussood: datasets, augmentations, InfoNCE loss, encoders,
training and embedding extraction. Imports torch; the numpy core does not.

Data flow: ``load_dataset`` -> ``train_encoder`` -> ``extract_embeddings`` ->
numpy arrays for the scorers in ``gaussood``.
"""

from .augment import SimCLRAugment, eval_transform, two_views
from .checkpoint import load_encoder, save_encoder
from .data import ImageSet, jpeg_reencode, load_dataset, parse_classes
from .embed import embed_images, extract_embeddings
from .encoders import Embeddings, ImageEncoder, make_encoder
from .evaluate import Evaluation, OODSet, evaluate
from .images import ImageFiles, open_images
from .loss import InfoNCELoss, SupConLoss
from .models import Encoder
from .preprocess import imagenet_preprocessing
from .train import TrainConfig, TrainResult, knn_top1, train_encoder

__all__ = ["ImageSet", "load_dataset", "jpeg_reencode", "SimCLRAugment", "two_views",
           "eval_transform", "InfoNCELoss", "SupConLoss", "Encoder", "TrainConfig", "TrainResult",
           "train_encoder", "knn_top1", "embed_images", "extract_embeddings",
           "load_encoder", "save_encoder", "parse_classes", "evaluate", "Evaluation", "OODSet",
           "make_encoder", "ImageEncoder", "Embeddings", "open_images", "ImageFiles", "imagenet_preprocessing"]
