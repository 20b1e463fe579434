"""Generated datasets with scorers: the tasks peftlab fine-tunes and evaluates on."""
