from .search_llm import SearchConfig, SearchMethod

__all__ = ["SearchConfig", "SearchMethod"]
