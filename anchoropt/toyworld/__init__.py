"""The toy world: generated images and captions, a tiny CLIP pretrained on them, and downstream datasets.

``grammar`` (words, captions, descriptions), ``render`` (PIL drawing), ``pretrain`` (the recipe and the
contrastive training), ``spec`` (the datasets), ``world`` (building and caching), ``protocol`` (running the
protocol scripts on it). Nothing is built at import; see ``anchoropt-toyworld`` and ``anchoropt-demo``.
"""
