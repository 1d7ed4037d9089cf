"""Client-side exceptions. HTTP errors from the server surface as keystoneauth1 ``HttpError``
subclasses whose text is ``<server message> (HTTP <code>)``."""


class CoriolisException(Exception):
    pass


class HTTPError(CoriolisException):
    def __init__(self, message: str, status_code: int | None = None) -> None:
        super().__init__(message)
        self.status_code = status_code


class HTTPServerError(HTTPError):
    pass


class HTTPClientError(HTTPError):
    pass


class HTTPAuthError(HTTPClientError):
    def __init__(self, message: str) -> None:
        super().__init__(message, 401)


class EndpointConnectionValidationFailed(CoriolisException):
    def __init__(self, message: str | None) -> None:
        super().__init__(f"Endpoint connection validation failed: {message}")


class NoUniqueEndpointNameMatch(CoriolisException):
    pass


class EndpointIDNotFound(CoriolisException):
    pass


class LoggingEndpointNotFound(CoriolisException):
    pass


class LicensingEndpointNotFound(CoriolisException):
    pass
