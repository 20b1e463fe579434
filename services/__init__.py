"""peftlab: services."""
