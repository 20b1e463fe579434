"""peftlab: trainer."""
