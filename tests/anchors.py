"""Reference figures from ../shared/ANCHORS.md (torchvision weights metadata, keras.applications,
He et al. 2015). Copied here so the tests run from a clone alone; the sources are named there."""

# torchvision-style counts: sum(p.numel() for p in model.parameters())
TORCHVISION_PARAMS = {
    "alexnet": 61_100_840,
    "vgg11": 132_863_336,
    "vgg11_bn": 132_868_840,
    "vgg13": 133_047_848,
    "vgg13_bn": 133_053_736,
    "vgg16": 138_357_544,
    "vgg16_bn": 138_365_992,
    "vgg19": 143_667_240,
    "vgg19_bn": 143_678_248,
    "googlenet": 6_624_904,
    "googlenet+aux": 13_004_888,
    "inception_v3": 27_161_264,  # with its aux head
    "resnet18": 11_689_512,
    "resnet34": 21_797_672,
    "resnet50": 25_557_032,
    "resnet101": 44_549_160,
    "resnet152": 60_192_808,
}

# Keras model.count_params(): total, trainable, non-trainable (None where ANCHORS gives no figure)
KERAS_PARAMS = {
    "vgg16": (138_357_544, 138_357_544, 0),
    "vgg19": (143_667_240, 143_667_240, 0),
    "resnet50_keras": (25_636_712, 25_583_592, 53_120),
    "resnet101_keras": (44_707_176, None, None),
    "resnet152_keras": (60_419_944, None, None),
    "inception_v3_keras": (23_851_784, 23_817_352, 34_432),
}

# He et al. 2015, section 4.2, CIFAR-10 networks: parameters in millions as the paper rounds them
CIFAR_RESNET_PARAMS_M = {"resnet20": 0.27, "resnet32": 0.46, "resnet44": 0.66, "resnet56": 0.85, "resnet110": 1.7}

# torchvision references/classification README, ResNet-50 "new recipe" (IMAGENET1K_V2, 80.858% top-1), as
# ANCHORS.md quotes it ("Training recipes"); run there with torchrun on 8 GPUs.
TORCHVISION_V2_COMMAND = (
    "--model resnet50 --batch-size 128 --lr 0.5 --lr-scheduler cosineannealinglr --lr-warmup-epochs 5 "
    "--lr-warmup-method linear --auto-augment ta_wide --epochs 600 --random-erase 0.1 --weight-decay 0.00002 "
    "--norm-weight-decay 0.0 --label-smoothing 0.1 --mixup-alpha 0.2 --cutmix-alpha 1.0 --train-crop-size 176 "
    "--model-ema --val-resize-size 232 --ra-sampler --ra-reps 4"
)
