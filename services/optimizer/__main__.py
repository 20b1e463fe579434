"""`python -m services.optimizer`: serve the Optimizer gRPC service (config from PEFTLAB_* env)."""

from services.optimizer.server import main

if __name__ == "__main__":
    main()
