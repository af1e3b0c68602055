"""Search over a connected space: a FAISS index of joint-space rows (``index``), query embedding
(``query``), and the web application on top (``app``, imported only by ``cmcr serve``).

The core never imports this package; this package imports the core.
"""

from cmcr.serve.index import Index, SearchResult, StoreSource

__all__ = ["Index", "SearchResult", "StoreSource"]
