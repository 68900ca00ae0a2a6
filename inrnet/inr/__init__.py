"""Frozen INRs: families, batched evaluation, batched fitting and the INR dataset format."""

from inrnet.inr.base import FAMILIES, INRBatch, INRFamily, INRModule, family_from_dict, register_family
from inrnet.inr.build import build_dataset
from inrnet.inr.dataset import INRDataset, load_inrs
from inrnet.inr.evaluate import sample
from inrnet.inr.fitting import fit, fit_quality, psnr
from inrnet.inr.fourier import FourierFamily, FourierFeatures
from inrnet.inr.functa import FunctaFamily
from inrnet.inr.importer import import_functa, import_inrs
from inrnet.inr.pixel import PixelFamily, PixelINR
from inrnet.inr.siren import Siren, SirenFamily
from inrnet.inr.smoothness import KLipschitz, LiuRegularizer
from inrnet.inr.store import CorruptShardError, read_manifest, save_inrs

__all__ = ["INRFamily", "INRBatch", "INRModule", "FAMILIES", "register_family", "family_from_dict",
           "SirenFamily", "Siren", "FourierFamily", "FourierFeatures", "FunctaFamily", "PixelFamily", "PixelINR",
           "sample", "fit", "fit_quality", "psnr", "LiuRegularizer", "KLipschitz",
           "save_inrs", "build_dataset", "import_inrs", "import_functa", "INRDataset", "load_inrs", "read_manifest",
           "CorruptShardError"]
