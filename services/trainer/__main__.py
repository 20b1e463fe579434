"""`python -m services.trainer`: serve the Trainer gRPC service (config from PEFTLAB_* env)."""

from services.trainer.server import main

if __name__ == "__main__":
    main()
