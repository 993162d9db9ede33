"""doremi-jax: DoReMi (Domain Reweighting with Minimax Optimization) in JAX."""
import setuptools

setuptools.setup(
    name="doremi_jax",
    version="0.1.0",
    description="Find the data mixture to pretrain a language model on, with DoReMi, in JAX.",
    packages=setuptools.find_packages(include=["doremi_jax", "doremi_jax.*", "tasks", "tasks.*"]),
    package_data={"": ["*.gin"]},
    python_requires=">=3.10",
    # Exact pins live in requirements.lock; these are the direct dependencies.
    install_requires=[
        "jax", "flax", "optax", "orbax-checkpoint", "seqio", "tensorflow-cpu",
        "tensorflow-datasets", "gin-config", "tensorboardX", "tqdm", "matplotlib",
        "sentencepiece", "zstandard", "pyyaml",
    ],
    extras_require={"test": ["pytest", "hypothesis"]},
    entry_points={
        "console_scripts": [
            "doremi-train=doremi_jax.train:console_main",
            "doremi-pipeline=doremi_jax.pipeline:console_main",
            "doremi-eval=doremi_jax.evaluate:main",
            "doremi-corpus=doremi_jax.corpus:main",
        ],
    },
)
