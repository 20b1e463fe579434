"""peftlab: comparator."""
