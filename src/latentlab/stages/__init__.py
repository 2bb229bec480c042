"""The pipeline's stages, one module each, each a function of (config, input paths,
output paths) that writes its outputs atomically and returns a one-line summary.

DVC runs each as ``python -m latentlab.stages.<name>``; the in-process sweep runner
(``latentlab.sweep``) and the tests call the same functions. A stage module imports at
module level exactly the project code it runs, so ``dvc.yaml`` can list that code file
by file (``latentlab.dag`` computes it; a test keeps the two equal). This file imports
nothing: importing one stage must not import the others.
"""
