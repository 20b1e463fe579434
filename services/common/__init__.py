"""peftlab: common."""
