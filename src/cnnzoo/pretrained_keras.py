"""The ImageNet weight files keras.applications publishes for the zoo's Keras twins, as Keras pins them.

Keras is not needed at run time, so the facts are written down here; ``tests/test_pretrained.py``
reads Keras' own sources (``keras/src/applications/{vgg16,vgg19,resnet,inception_v3}.py``: the
``WEIGHTS_PATH*`` / ``BASE_WEIGHTS_PATH`` URLs and the ``file_hash`` each ``get_file`` call passes)
and fails if any entry here differs. Keras pins these files by MD5 (``file_hash`` of 32 digits,
which ``keras.utils.get_file`` checks with MD5).

Published accuracy and sizes are the table of https://keras.io/api/applications (single centre
crop, ImageNet validation set); Keras publishes them for the files with the classifier only.
"""

from __future__ import annotations

from dataclasses import dataclass

KERAS_APPLICATIONS_URL = "https://storage.googleapis.com/tensorflow/keras-applications/"
KERAS_METRICS_SOURCE = "https://keras.io/api/applications"
KERAS_LICENSE = "MIT (keras-applications); weights ported by Keras from the authors' releases"


@dataclass(frozen=True)
class KerasFile:
    """One file as ``keras.applications.<keras_name>(weights="imagenet", include_top=...)`` downloads it."""

    model: str  # the zoo model it loads into
    keras_name: str
    module: str  # the keras/src/applications module that pins it
    include_top: bool
    path: str  # under KERAS_APPLICATIONS_URL
    md5: str

    @property
    def url(self) -> str:
        return KERAS_APPLICATIONS_URL + self.path

    @property
    def tag(self) -> str:
        return "imagenet" if self.include_top else "imagenet_notop"


def _pair(model: str, keras_name: str, module: str, stem: str, md5_top: str, md5_notop: str) -> tuple[KerasFile, ...]:
    name = f"{stem}_weights_tf_dim_ordering_tf_kernels"
    folder = module + "/"
    return (
        KerasFile(model, keras_name, module, True, f"{folder}{name}.h5", md5_top),
        KerasFile(model, keras_name, module, False, f"{folder}{name}_notop.h5", md5_notop),
    )


KERAS_FILES: tuple[KerasFile, ...] = (
    *_pair("vgg16", "VGG16", "vgg16", "vgg16", "64373286793e3c8b2b4e3219cbf3544b", "6d6bbae143d832006294945121d1f1fc"),
    *_pair("vgg19", "VGG19", "vgg19", "vgg19", "cbe5617147190e668d6c5d5026f83318", "253f8cb515780f3b799900260a226db6"),
    *_pair(
        "resnet50_keras",
        "ResNet50",
        "resnet",
        "resnet50",
        "2cb95161c43110f7111970584f804107",
        "4d473c1dd8becc155b73f8504c6f6626",
    ),
    *_pair(
        "resnet101_keras",
        "ResNet101",
        "resnet",
        "resnet101",
        "f1aeb4b969a6efcfb50fad2f0c20cfc5",
        "88cf7a10940856eca736dc7b7e228a21",
    ),
    *_pair(
        "resnet152_keras",
        "ResNet152",
        "resnet",
        "resnet152",
        "100835be76be38e30d865e96f2aaae62",
        "ee4c566cf9a93f14d82f913c2dc6dd0c",
    ),
    *_pair(
        "inception_v3_keras",
        "InceptionV3",
        "inception_v3",
        "inception_v3",
        "9a0d58056eeedaa3f26cb7ebd46da564",
        "bcbd6486424b2319ff4ef7d526e38f63",
    ),
)

# keras.applications.<module>.preprocess_input: "caffe" (RGB->BGR, minus the ImageNet mean in 0..255, no
# scaling) for VGG and ResNet, "tf" (scale to [-1, 1]) for InceptionV3. Native input sizes.
KERAS_PREPROCESSING_MODE = {
    "VGG16": "caffe",
    "VGG19": "caffe",
    "ResNet50": "caffe",
    "ResNet101": "caffe",
    "ResNet152": "caffe",
    "InceptionV3": "tf",
}
KERAS_INPUT_SIZE = {"VGG16": 224, "VGG19": 224, "ResNet50": 224, "ResNet101": 224, "ResNet152": 224, "InceptionV3": 299}
CAFFE_MEAN_BGR_255 = (103.939, 116.779, 123.68)

# keras.io/api/applications: (top-1 %, top-5 %, size in MB) of the files with the classifier.
KERAS_PUBLISHED = {
    "VGG16": (71.3, 90.1, 528),
    "VGG19": (71.3, 90.0, 549),
    "ResNet50": (74.9, 92.1, 98),
    "ResNet101": (76.4, 92.8, 171),
    "ResNet152": (76.6, 93.1, 232),
    "InceptionV3": (77.9, 93.7, 92),
}
