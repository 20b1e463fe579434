"""peftlab: engine."""
