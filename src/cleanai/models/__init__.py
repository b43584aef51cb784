"""Model zoo: CIFAR and ImageNet ResNets, MobileNetV2, a small CNN and HF text classifiers, built by name.

`create_model(name, pretrained=..., **kwargs)` builds any registered model; every vision model carries
`input_size` (C, H, W) so other parts can make example inputs.
"""

from cleanai.models._factory import MODELS, PRETRAINED, create_model, list_models
from cleanai.models.mobilenet import InvertedResidual, MobileNetV2
from cleanai.models.resnet import BasicBlock, Bottleneck, ResNet
from cleanai.models.resnet_cifar import CifarBasicBlock, CifarResNet, PadShortcut, akamaster_checkpoint
from cleanai.models.small_cnn import SmallCNN
from cleanai.models.text import TextClassifier, VocabularyEmbedding, default_text_checkpoint, tiny_bert_classifier
from cleanai.models.tiny_transformers import TINY_TRANSFORMERS, tiny_transformer, tiny_transformer_inputs

__all__ = [
    "MODELS", "PRETRAINED", "BasicBlock", "Bottleneck", "CifarBasicBlock", "CifarResNet", "InvertedResidual",
    "MobileNetV2", "PadShortcut", "ResNet", "SmallCNN", "TextClassifier", "VocabularyEmbedding",
    "akamaster_checkpoint",
    "create_model", "default_text_checkpoint", "list_models", "tiny_bert_classifier",
]
__all__ += ["TINY_TRANSFORMERS", "tiny_transformer", "tiny_transformer_inputs"]  # one tiny HF model per family
