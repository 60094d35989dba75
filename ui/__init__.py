"""eventscope.ui."""
