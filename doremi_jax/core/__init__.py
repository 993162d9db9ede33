"""The JAX core: DoReMi math, the model, sharding, train state and the jitted steps."""
