"""peftlab: optimizer."""
