import msgspec
import pytest

from astra.core import (
    AstraError,
    Conflict,
    CredentialsUnreadable,
    Error,
    ExchangeNotServed,
    Forbidden,
    InvalidMarket,
    InvalidParameter,
    MarketNotFound,
    MethodNotAllowed,
    MissingParameter,
    NotFound,
    PayloadTooLarge,
    RateLimited,
    Unauthorized,
    UnknownExchange,
    Unprocessable,
    VenueError,
    VenueTimeout,
    VenueUnavailable,
    WebSocketUpgradeRequired,
)

EXPECTED = [
    (InvalidParameter, "INVALID_PARAMETER", 400),
    (MissingParameter, "MISSING_PARAMETER", 400),
    (InvalidMarket, "INVALID_MARKET", 400),
    (MarketNotFound, "MARKET_NOT_FOUND", 404),
    (UnknownExchange, "UNKNOWN_EXCHANGE", 400),
    (Unauthorized, "UNAUTHORIZED", 401),
    (Forbidden, "FORBIDDEN", 403),
    (NotFound, "NOT_FOUND", 404),
    (Conflict, "CONFLICT", 409),
    (Unprocessable, "UNPROCESSABLE", 422),
    (RateLimited, "RATE_LIMITED", 429),
    (VenueError, "VENUE_ERROR", 502),
    (VenueUnavailable, "VENUE_UNAVAILABLE", 503),
    (VenueTimeout, "VENUE_TIMEOUT", 504),
    (ExchangeNotServed, "EXCHANGE_NOT_SERVED", 404),
    (MethodNotAllowed, "METHOD_NOT_ALLOWED", 405),
    (PayloadTooLarge, "PAYLOAD_TOO_LARGE", 413),
    (WebSocketUpgradeRequired, "WEBSOCKET_UPGRADE_REQUIRED", 400),
    (CredentialsUnreadable, "CREDENTIALS_UNREADABLE", 503),
]


@pytest.mark.parametrize(("cls", "code", "status"), EXPECTED)
def test_code_and_status(cls, code, status):
    assert cls.code == code
    assert cls.status == status
    assert issubclass(cls, AstraError)
    assert AstraError.from_code(code) is cls


def test_base_is_internal_error():
    err = AstraError("boom")
    assert (err.code, err.status, str(err)) == ("INTERNAL_ERROR", 500, "boom")
    assert AstraError.from_code("NO_SUCH_CODE") is AstraError


def test_parameter_errors_name_the_parameter():
    err = InvalidParameter("depth", "must be between 1 and 1000")
    assert err.parameter == "depth"
    assert err.message == "invalid parameter 'depth': must be between 1 and 1000"
    assert InvalidParameter("depth").message == "invalid parameter 'depth'"

    missing = MissingParameter("market")
    assert missing.parameter == "market"
    assert str(missing) == "missing required parameter 'market'"
    assert msgspec.json.encode(missing.to_model()) == (
        b'{"code":"MISSING_PARAMETER","message":"missing required parameter \'market\'",'
        b'"parameter":"market"}'
    )


def test_market_and_exchange_errors():
    err = MarketNotFound("BINANCE-SPOT-FOO-USDT")
    assert err.message == "market 'BINANCE-SPOT-FOO-USDT' not found"
    assert (err.parameter, err.market, err.status) == ("market", "BINANCE-SPOT-FOO-USDT", 404)

    unknown = UnknownExchange("FOO")
    assert unknown.message.startswith("unknown exchange 'FOO': expected one of BINANCE, ")
    assert "SIM" in unknown.message
    assert unknown.parameter == "exchange"

    invalid = InvalidMarket("bad", market="X", position=1)
    assert (invalid.parameter, invalid.market, invalid.position) == ("market", "X", 1)


def test_to_model_json():
    model = Unauthorized().to_model()
    assert isinstance(model, Error)
    assert msgspec.json.encode(model) == (
        b'{"code":"UNAUTHORIZED","message":"missing or invalid API key"}'
    )
    assert msgspec.json.encode(RateLimited(retry_after=1.5).to_model()) == (
        b'{"code":"RATE_LIMITED","message":"rate limit exceeded","retryAfter":1.5}'
    )


def test_venue_errors_carry_venue():
    err = VenueError("BINANCE", "Parameter 'quantity' too small", venue_code=-1013)
    assert (err.venue, err.venue_code, err.status) == ("BINANCE", "-1013", 502)
    assert msgspec.json.encode(err.to_model()) == (
        b'{"code":"VENUE_ERROR","message":"Parameter \'quantity\' too small",'
        b'"venue":"BINANCE","venueCode":"-1013"}'
    )
    assert VenueTimeout("KRAKEN").message == "venue KRAKEN timed out"
    assert VenueUnavailable("OKX").message == "venue OKX is unavailable"
    assert VenueError("OKX").message == "venue OKX rejected the request"
    # Every venue-side failure is caught by `except VenueError`.
    with pytest.raises(VenueError):
        raise VenueTimeout("KRAKEN")


@pytest.mark.parametrize(
    "err",
    [
        InvalidParameter("depth", "too big"),
        InvalidMarket("bad market", market="X"),
        VenueError("BINANCE", "nope", venue_code="E1"),
        RateLimited(retry_after=2.0),
        NotFound("order 7 not found"),
    ],
)
def test_from_model_round_trip(err):
    wire = msgspec.json.encode(err.to_model())
    back = AstraError.from_model(msgspec.json.decode(wire, type=Error))
    assert type(back) is type(err)
    assert back.to_model() == err.to_model()


def test_from_model_keeps_unknown_codes():
    back = AstraError.from_model(Error(code="FUTURE_CODE", message="m"))
    assert type(back) is AstraError
    assert (back.code, back.message, back.status) == ("FUTURE_CODE", "m", 500)


def test_codes_are_unique():
    with pytest.raises(TypeError, match="duplicate"):

        class Again(AstraError, code="NOT_FOUND", status=404):
            pass


def test_errors_pickle():
    # Exceptions cross process boundaries (executors, multiprocessing).
    import pickle

    for err in (InvalidParameter("depth", "x"), VenueError("BINANCE", "m", venue_code=1)):
        back = pickle.loads(pickle.dumps(err))
        assert type(back) is type(err) and back.to_model() == err.to_model()
