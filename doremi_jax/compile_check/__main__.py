"""``python -m doremi_jax.compile_check``: see the package's docstring."""
from doremi_jax.compile_check import main

main()
