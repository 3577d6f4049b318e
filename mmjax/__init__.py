"""mmjax: multimodal training in JAX/Flax."""
