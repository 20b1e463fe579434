"""The names of the gRPC metadata peftlab's services and clients exchange."""

REQUEST_ID_KEY = "x-request-id"  # one id follows a request across services and into their logs
FIELD_KEY = "peftlab-field"  # trailer naming the request field at fault (set by common/interceptors.py)
