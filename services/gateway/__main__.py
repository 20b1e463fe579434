"""`python -m services.gateway`: serve the Gateway gRPC service (config from PEFTLAB_* env)."""

from services.gateway.server import main

if __name__ == "__main__":
    main()
