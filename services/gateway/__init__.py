"""peftlab: gateway."""
