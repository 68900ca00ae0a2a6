"""INR datasets: the registry, readers, label maps, and the builders' building blocks.

``get_dataset(name, split, root)`` opens a built dataset; each builder lives in its own
module (`fashion_mnist`, `imagenet`,
`cityscapes`, `scenes`) with a command-line
script under ``datasets/<name>/`` in the repository.
"""

from inrnet.datasets.embedded import EmbeddedINRDataset, open_default
from inrnet.datasets.fashion_mnist import default_images, load_fashion_mnist_images, read_idx
from inrnet.datasets.labelmaps import IGNORE_INDEX, LabelMapDataset, label_coords, labels_at, pixel_index
from inrnet.datasets.registry import DATASETS, default_root, get_dataset, list_datasets
from inrnet.datasets.sources import ImageDecodeError

__all__ = ["get_dataset", "list_datasets", "DATASETS", "default_root",
           "read_idx", "load_fashion_mnist_images", "default_images", "EmbeddedINRDataset", "open_default",
           "LabelMapDataset", "IGNORE_INDEX", "label_coords", "labels_at", "pixel_index", "ImageDecodeError"]
