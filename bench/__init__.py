"""peftlab: bench."""
