"""Code generators: level-2 kernels rendered from the templates in ``pigeon/kernels``."""
