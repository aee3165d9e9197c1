"""Data for all-in-one adverse-weather restoration: image I/O, the weather renderer, dataset readers.

    from mofme.data import BuiltinWeatherDataset, PairedImageDataset, read_pair_list
    train = BuiltinWeatherDataset("train", crop_size=64)             # no download needed
    pairs = read_pair_list("data/train/allweather.txt")              # validated up front
    real = PairedImageDataset(pairs, crop_size=240, augment=True)

Images are float32 (H, W, 3) RGB numpy arrays in [0, 1]; dataset items are (3, H, W) float32 tensors.
"""

from .builtin import BUILTIN_LONG_SIDE, BUILTIN_SPLITS, BuiltinWeatherDataset, builtin_photos
from .datasets import (
    DatasetError,
    ImagePair,
    PairedImageDataset,
    infer_weather,
    outdoor_rain_test1,
    paired_folder,
    raindrop_test_a,
    read_pair_list,
    snow100k_l,
    validate_pairs,
    weather_index,
)
from .io import IMAGE_EXTENSIONS, ImageReadError, list_images, read_image, write_image
from .recognition import (
    ACDC_CONDITIONS,
    CITYSCAPES_CLASSES,
    FOGGY_CITYSCAPES_BETAS,
    IGNORE_INDEX,
    ClassificationDataset,
    ClassificationSamples,
    SegmentationDataset,
    SegmentationPair,
    acdc,
    cityscapes,
    cityscapes_train_ids,
    image_folder,
    read_label,
)
from .synth import synthesize_dataset
from .transforms import AUGMENT_MODES, augment
from .weather import SEVERITIES, WEATHER_TYPES, WeatherSample, render_weather

__all__ = [
    "ACDC_CONDITIONS",
    "AUGMENT_MODES",
    "BUILTIN_LONG_SIDE",
    "BUILTIN_SPLITS",
    "CITYSCAPES_CLASSES",
    "FOGGY_CITYSCAPES_BETAS",
    "IGNORE_INDEX",
    "IMAGE_EXTENSIONS",
    "SEVERITIES",
    "WEATHER_TYPES",
    "BuiltinWeatherDataset",
    "ClassificationDataset",
    "ClassificationSamples",
    "DatasetError",
    "ImagePair",
    "ImageReadError",
    "PairedImageDataset",
    "SegmentationDataset",
    "SegmentationPair",
    "WeatherSample",
    "acdc",
    "augment",
    "builtin_photos",
    "cityscapes",
    "cityscapes_train_ids",
    "image_folder",
    "infer_weather",
    "list_images",
    "outdoor_rain_test1",
    "paired_folder",
    "raindrop_test_a",
    "read_image",
    "read_label",
    "read_pair_list",
    "render_weather",
    "snow100k_l",
    "synthesize_dataset",
    "validate_pairs",
    "weather_index",
    "write_image",
]
