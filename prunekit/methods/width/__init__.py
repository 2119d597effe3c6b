from .search import SearchConfig, SearchMethod

__all__ = ["SearchConfig", "SearchMethod"]
