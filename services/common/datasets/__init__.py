"""Datasets as every service reads them: sources (files, `save_to_disk` dirs, the hub), column layouts,
formats, encoding into samples and batches, and task scoring. The engine trains on them, the gateway's
catalog validates and previews with them, the comparator's PyTorch backend trains and scores with them."""
