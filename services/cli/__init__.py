"""peftlab: cli."""
