"""PyTorch models: the hierarchical Gaussian VAE and the registry of shipped weights."""
from .vae import (ForwardResult, Gaussian, HierarchicalVAE, VAEConfig, gaussian_kl_bits, pad_to_multiple,
                  quality_to_lambda)

from .registry import DEFAULT_MODEL, ModelInfo, available_models, load_model

__all__ = ["DEFAULT_MODEL", "ModelInfo", "available_models", "load_model", "ForwardResult", "Gaussian", "HierarchicalVAE", "VAEConfig", "gaussian_kl_bits", "pad_to_multiple",
           "quality_to_lambda"]
