"""doremi-jax: DoReMi (Domain Reweighting with Minimax Optimization) in JAX."""
import setuptools

# The repo's tasks/ and gin/ folders install inside the package, as doremi_jax.tasks and
# doremi_jax/gin (no top-level "tasks" package); a checkout finds them through
# doremi_jax/__init__.py.
PACKAGES = setuptools.find_packages(include=["doremi_jax", "doremi_jax.*"])

setuptools.setup(
    name="doremi_jax",
    version="0.1.0",
    description="Find the data mixture to pretrain a language model on, with DoReMi, in JAX.",
    packages=PACKAGES + ["doremi_jax.tasks", "doremi_jax.gin"],
    package_dir={"doremi_jax.tasks": "tasks", "doremi_jax.gin": "gin"},
    package_data={"doremi_jax.gin": ["*/*.gin"]},
    python_requires=">=3.10",
    # Exact pins live in requirements.lock; these are the direct dependencies.
    install_requires=[
        "jax", "flax", "optax", "orbax-checkpoint", "seqio", "tensorflow-cpu",
        "tensorflow-datasets", "gin-config", "tensorboardX", "tqdm", "matplotlib",
        "sentencepiece", "zstandard", "pyyaml", "scipy", "apache-beam", "grain", "array_record",
    ],
    extras_require={"test": ["pytest", "hypothesis"], "lint": ["ruff"]},
    # Console scripts run sys.exit(target()): each target is a console_main that returns
    # None, so success exits 0 (main() returns its result dict for in-process callers).
    entry_points={
        "console_scripts": [
            "doremi-train=doremi_jax.train:console_main",
            "doremi-pipeline=doremi_jax.pipeline:console_main",
            "doremi-eval=doremi_jax.evaluate:console_main",
            "doremi-corpus=doremi_jax.corpus:console_main",
            "doremi-export=doremi_jax.export:console_main",
            "doremi-compile-check=doremi_jax.compile_check:console_main",
        ],
    },
)
