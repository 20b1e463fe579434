"""`python -m services.comparator`: serve the Comparator gRPC service (config from PEFTLAB_* env)."""

from services.comparator.server import main

if __name__ == "__main__":
    main()
