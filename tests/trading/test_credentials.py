"""Exchange credentials in the trading layer: header parsing per venue (no secret in any error),
headers else the store, the log redactor (tracebacks included), and header credentials trading on
the simulator. The model itself is tested in tests/core/test_credentials.py."""

from __future__ import annotations

import asyncio
import io
import logging

import ccxt.async_support as ccxt_async
import pytest
from multidict import CIMultiDict

from astra.core import (
    AstraError,
    CredentialsForbidden,
    Exchange,
    InvalidCredentials,
    MissingCredentials,
    UnknownExchange,
)
from astra.core.credentials import ExchangeCredentials
from astra.trading.credentials import (
    HEADERS,
    REDACTED,
    SecretRedactor,
    credentials_from_headers,
    install_redactor,
    redacting,
    resolve_credentials,
)

KEY = "AKIDkey0123456789abcdefWXYZ"
SECRET = "s3cr3t-Value_9f8e7d6c5b4a3928171605f4e3d2c1b0"
PASSPHRASE = "correct horse battery"
PRIVATE_KEY = "0x" + "4c0883a69102937d6231471b5dbb6204fe5129617082792ae468d01a3f362318"
ACCOUNT = "0x" + "Ab12" * 10
PEM = "-----BEGIN EC PRIVATE KEY-----\nMHcCAQEEIBkg4LVWM9nuwNSk3yIZaq\n-----END EC PRIVATE KEY-----"
ALL_SECRETS = (SECRET, PASSPHRASE, PRIVATE_KEY, PRIVATE_KEY[2:])

H_KEY, H_SECRET, H_PASS, H_PK, H_ACCOUNT = (
    HEADERS[f] for f in ("api_key", "secret", "passphrase", "private_key", "account")
)


def _no_secret(text: str) -> None:
    for s in ALL_SECRETS:
        assert s not in text


# --- error codes ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("cls", "code", "status"),
    [
        (MissingCredentials, "EXCHANGE_CREDENTIALS_REQUIRED", 401),
        (InvalidCredentials, "INVALID_EXCHANGE_CREDENTIALS", 401),
        (CredentialsForbidden, "EXCHANGE_CREDENTIALS_FORBIDDEN", 403),
    ],
)
def test_error_codes(cls: type[AstraError], code: str, status: int) -> None:
    assert (cls.code, cls.status) == (code, status)
    assert AstraError.from_code(code) is cls
    err = cls(venue="OKX")
    assert err.to_model().code == code and err.to_model().venue == "OKX"
    assert str(err) == cls.default_message


# --- headers -------------------------------------------------------------------------------

COMPLETE = [
    ("BINANCE", {H_KEY: KEY, H_SECRET: SECRET}),
    ("COINBASE", {H_KEY: KEY, H_SECRET: SECRET}),
    ("KRAKEN", {H_KEY: KEY, H_SECRET: SECRET}),
    ("HUOBI", {H_KEY: KEY, H_SECRET: SECRET}),
    ("OKX", {H_KEY: KEY, H_SECRET: SECRET, H_PASS: PASSPHRASE}),
    ("KUCOIN", {H_KEY: KEY, H_SECRET: SECRET, H_PASS: PASSPHRASE}),
    ("ASTER", {H_KEY: KEY, H_SECRET: SECRET}),
    ("ASTER", {H_PK: PRIVATE_KEY}),
    ("ASTER", {H_PK: PRIVATE_KEY, H_ACCOUNT: ACCOUNT}),
    ("SIM", {H_PK: PRIVATE_KEY[2:], H_ACCOUNT: ACCOUNT}),
    ("SIM", {H_KEY: KEY, H_SECRET: SECRET, H_PK: PRIVATE_KEY}),  # both sets
]


@pytest.mark.parametrize(("exchange", "headers"), COMPLETE)
def test_complete_headers(exchange: str, headers: dict[str, str]) -> None:
    noise = {"x-astra-api-key": "Bearer abc.def", "Content-Type": "application/json"}
    creds = credentials_from_headers(CIMultiDict({**noise, **headers}), exchange)
    assert creds is not None and creds.exchange is Exchange(exchange)
    by_field = {f: headers.get(h) for f, h in HEADERS.items()}
    assert (creds.api_key, creds.secret, creds.passphrase, creds.private_key, creds.account) == (
        by_field["api_key"],
        by_field["secret"],
        by_field["passphrase"],
        by_field["private_key"],
        by_field["account"],
    )


def test_header_names_are_case_insensitive_and_values_trimmed() -> None:
    plain = {"X-Astra-Exchange-Key": f"  {KEY} ", "X-ASTRA-EXCHANGE-SECRET": f"{SECRET}\t"}
    creds = credentials_from_headers(plain, "BINANCE")
    assert creds == ExchangeCredentials(Exchange.BINANCE, api_key=KEY, secret=SECRET)


def test_the_same_headers_again_are_the_same_checked_credentials_per_exchange() -> None:
    headers = {H_KEY: KEY, H_SECRET: SECRET}
    first = credentials_from_headers(headers, "BINANCE")
    assert credentials_from_headers(dict(headers), "BINANCE") is first  # checked once
    other = credentials_from_headers(headers, "KRAKEN")
    assert other is not first and other.exchange == Exchange.KRAKEN
    wallet = credentials_from_headers({H_PK: PRIVATE_KEY}, "SIM")
    assert credentials_from_headers({H_PK: PRIVATE_KEY}, "SIM") is wallet
    # A value that differs is checked afresh: a bad one is refused, not served from memory.
    with pytest.raises(InvalidCredentials):
        credentials_from_headers({H_PK: PRIVATE_KEY[:-2] + "zz"}, "SIM")


def test_no_credential_headers_is_none() -> None:
    assert credentials_from_headers({}, "OKX") is None
    assert credentials_from_headers({"x-astra-api-key": "k", "accept": "*/*"}, "OKX") is None
    assert credentials_from_headers({H_KEY: "", H_SECRET: "   "}, "OKX") is None  # empty = absent


@pytest.mark.parametrize(
    ("exchange", "headers", "missing"),
    [
        ("BINANCE", {H_KEY: KEY}, [H_SECRET]),
        ("BINANCE", {H_SECRET: SECRET}, [H_KEY]),
        ("COINBASE", {H_KEY: KEY, H_SECRET: ""}, [H_SECRET]),
        ("KRAKEN", {H_SECRET: SECRET}, [H_KEY]),
        ("HUOBI", {H_KEY: KEY}, [H_SECRET]),
        ("OKX", {H_KEY: KEY, H_SECRET: SECRET}, [H_PASS]),
        ("OKX", {H_PASS: PASSPHRASE}, [H_KEY, H_SECRET]),
        ("KUCOIN", {H_KEY: KEY, H_PASS: PASSPHRASE}, [H_SECRET]),
        ("ASTER", {H_KEY: KEY}, [H_SECRET]),
        ("ASTER", {H_ACCOUNT: ACCOUNT}, [H_PK]),  # an account points at the wallet scheme
        ("SIM", {H_SECRET: SECRET}, [H_KEY]),
    ],
)
def test_incomplete_headers(exchange: str, headers: dict[str, str], missing: list[str]) -> None:
    with pytest.raises(MissingCredentials) as exc:
        credentials_from_headers(headers, exchange)
    err = exc.value
    assert (err.code, err.status, err.venue) == ("EXCHANGE_CREDENTIALS_REQUIRED", 401, exchange)
    assert err.parameter == missing[0]
    assert f"missing {', '.join(missing)}" in err.message
    _no_secret(err.message)
    assert KEY not in err.message and ACCOUNT not in err.message


def test_incomplete_wallet_venue_names_both_schemes() -> None:
    with pytest.raises(MissingCredentials) as exc:
        credentials_from_headers({H_KEY: KEY}, "ASTER")
    assert exc.value.message == (
        "incomplete ASTER credentials: missing x-astra-exchange-secret (ASTER needs either "
        "x-astra-exchange-key and x-astra-exchange-secret, or x-astra-exchange-private-key "
        "(optionally with x-astra-exchange-account))"
    )


@pytest.mark.parametrize(
    ("exchange", "headers", "parameter", "reason"),
    [
        ("BINANCE", {H_KEY: KEY, H_SECRET: SECRET, H_PASS: PASSPHRASE}, H_PASS, "not used"),
        (
            "OKX",
            {H_KEY: KEY, H_SECRET: SECRET, H_PASS: PASSPHRASE, H_PK: PRIVATE_KEY},
            H_PK,
            "not used",
        ),
        ("KRAKEN", {H_KEY: KEY, H_SECRET: SECRET, H_ACCOUNT: ACCOUNT}, H_ACCOUNT, "not used"),
        ("ASTER", {H_KEY: KEY, H_SECRET: SECRET, H_ACCOUNT: ACCOUNT}, H_ACCOUNT, "only used with"),
        ("ASTER", {H_PK: PRIVATE_KEY[:-2]}, H_PK, "64 hex digits"),
        ("ASTER", {H_PK: "0x" + "g" * 64}, H_PK, "64 hex digits"),
        ("ASTER", {H_PK: "0x" + "0" * 64}, H_PK, "not a valid secp256k1"),
        ("ASTER", {H_PK: "0x" + "f" * 64}, H_PK, "not a valid secp256k1"),
        ("SIM", {H_PK: PRIVATE_KEY, H_ACCOUNT: "0x1234"}, H_ACCOUNT, "an address"),
        ("BINANCE", {H_KEY: KEY + " x", H_SECRET: SECRET}, H_KEY, "without spaces"),
        ("BINANCE", {H_KEY: KEY, H_SECRET: SECRET + "\x00"}, H_SECRET, "printable ASCII"),
        ("BINANCE", {H_KEY: KEY, H_SECRET: SECRET + "é"}, H_SECRET, "printable ASCII"),
        ("BINANCE", {H_KEY: "k" * 513, H_SECRET: SECRET}, H_KEY, "longer than 512"),
        ("OKX", {H_KEY: KEY, H_SECRET: SECRET, H_PASS: PASSPHRASE + "\n"}, None, None),  # trimmed
        (
            "BINANCE",
            {H_KEY: KEY, H_SECRET: SECRET, "x-astra-exchange-secert": SECRET},
            "x-astra-exchange-secert",
            "is unknown",
        ),
    ],
)
def test_invalid_headers(
    exchange: str, headers: dict[str, str], parameter: str | None, reason: str | None
) -> None:
    if parameter is None:
        assert credentials_from_headers(headers, exchange).passphrase == PASSPHRASE
        return
    with pytest.raises(InvalidCredentials) as exc:
        credentials_from_headers(headers, exchange)
    err = exc.value
    assert (err.code, err.status, err.venue) == ("INVALID_EXCHANGE_CREDENTIALS", 401, exchange)
    assert err.parameter == parameter and reason in err.message
    _no_secret(err.message)
    assert KEY not in err.message and "0x1234" not in err.message


def test_repeated_header_is_rejected() -> None:
    headers = CIMultiDict([(H_KEY, KEY), (H_SECRET, SECRET), ("X-Astra-Exchange-Secret", "other")])
    with pytest.raises(InvalidCredentials, match="sent more than once") as exc:
        credentials_from_headers(headers, "BINANCE")
    assert exc.value.parameter == H_SECRET
    _no_secret(exc.value.message)
    assert "other" not in exc.value.message


def test_unknown_exchange() -> None:
    with pytest.raises(UnknownExchange) as exc:
        credentials_from_headers({H_KEY: KEY, H_SECRET: SECRET}, "NASDAQ")
    assert exc.value.status == 400 and exc.value.parameter == "exchange"
    _no_secret(str(exc.value))
    with pytest.raises(UnknownExchange):
        credentials_from_headers({}, "okx")  # codes are exact
    with pytest.raises(UnknownExchange):
        ExchangeCredentials("NASDAQ", api_key=KEY, secret=SECRET)  # type: ignore[arg-type]


def test_escaped_pem_secret_in_a_header_gets_its_line_breaks() -> None:
    pem = f"{PEM}\n"
    escaped = pem.strip().replace("\n", "\\n")
    name = "organizations/abc/apiKeys/def"
    creds = credentials_from_headers({H_KEY: name, H_SECRET: escaped}, "COINBASE")
    assert creds.secret == pem.strip() and creds.api_key == name


@pytest.fixture
def okx() -> ExchangeCredentials:
    return ExchangeCredentials(Exchange.OKX, api_key=KEY, secret=SECRET, passphrase=PASSPHRASE)


# --- ccxt ----------------------------------------------------------------------------------


async def test_ccxt_with_account_trades_on_the_simulator(sim) -> None:
    """The simulator's v3 verifier accepts ccxt requests for the account, signed by its API
    wallet: ``user`` = the main wallet, ``signer`` = the API wallet."""
    from astra.sim.admin import parse_deposits

    new = sim.exchange.create_account(parse_deposits("USDT=1000"))
    headers = {H_PK: new.signerPrivateKey, H_ACCOUNT: new.user}
    creds = credentials_from_headers(headers, "SIM")
    assert creds.signer_address == new.signer.lower() != new.user.lower()
    config = creds.ccxt_config()
    config["options"]["builderFee"] = False
    ex = ccxt_async.aster(config)
    api = ex.urls["api"]
    api["fapiPublic"] = api["fapiPrivate"] = sim.base_url + "/fapi"
    api["sapiPublic"] = api["sapiPrivate"] = sim.base_url + "/api"
    try:
        async with asyncio.timeout(15):
            balance = await ex.fetch_balance()
    finally:
        await ex.close()
    assert balance["USDT"]["free"] == 1000


# --- resolve: headers, else the store --------------------------------------------------------


class FakeStore:
    def __init__(self, rows: dict[tuple[str, str], ExchangeCredentials]) -> None:
        self.rows = rows
        self.calls: list[tuple[str, str]] = []

    def get(self, key_id: str, exchange: Exchange | str) -> ExchangeCredentials | None:
        self.calls.append((key_id, str(exchange)))
        return self.rows.get((key_id, str(exchange)))


def test_resolve_headers_win_then_store_then_error(okx: ExchangeCredentials) -> None:
    store = FakeStore({("desk1", "OKX"): okx})
    sent = {H_KEY: "other-key-123", H_SECRET: "other-secret-456", H_PASS: "other-pass"}
    from_headers = resolve_credentials(sent, "OKX", key_id="desk1", store=store)
    assert from_headers.api_key == "other-key-123" and store.calls == []
    assert resolve_credentials({}, "OKX", key_id="desk1", store=store) is okx
    assert store.calls == [("desk1", "OKX")]
    with pytest.raises(MissingCredentials) as exc:
        resolve_credentials({}, "KRAKEN", key_id="desk1", store=store)
    assert exc.value.status == 401 and exc.value.venue == "KRAKEN"
    assert exc.value.message == (
        "KRAKEN requires exchange credentials: send the headers x-astra-exchange-key and "
        "x-astra-exchange-secret; none are stored on the server for this API key"
    )
    with pytest.raises(MissingCredentials, match="send the headers x-astra-exchange-key"):
        resolve_credentials({}, "OKX")


# --- the log redactor ------------------------------------------------------------------------


@pytest.fixture
def redactor():
    r = install_redactor()
    try:
        yield r
    finally:
        r.uninstall()


class VenueAuthError(Exception):
    pass


def _call_venue(api_key: str, secret: str) -> None:
    # Venues (and ccxt) echo what they were sent in error texts, e.g. a signed URL.
    raise VenueAuthError(f'{{"code":-2015,"msg":"Invalid API-key {api_key}, sig {secret}"}}')


def test_redactor_scrubs_a_traceback_logged_with_exception(
    redactor: SecretRedactor, okx: ExchangeCredentials, caplog: pytest.LogCaptureFixture
) -> None:
    log = logging.getLogger("astra.venues.fake")  # a child logger: propagates to the root
    with caplog.at_level(logging.INFO), redacting(okx):
        try:
            try:
                _call_venue(okx.api_key, okx.secret)
            except VenueAuthError as inner:
                raise RuntimeError(f"order failed with passphrase {okx.passphrase}") from inner
        except RuntimeError:
            log.exception("placing an order on OKX with key %s failed", okx.api_key)
        log.warning(
            "plain %s / %r", okx.secret, {"secret": okx.secret}, extra={"k": okx.passphrase}
        )
    text = caplog.text
    assert "VenueAuthError" in text and "RuntimeError" in text  # the traceback is there...
    assert "Traceback (most recent call last)" in text
    _no_secret(text)  # ...without the values
    assert KEY not in text
    assert text.count(REDACTED) >= 6
    exc_record, plain = caplog.records
    assert exc_record.exc_info is None and REDACTED in exc_record.exc_text
    _no_secret(exc_record.exc_text)
    assert plain.getMessage() == f"plain {REDACTED} / {{'secret': '{REDACTED}'}}"
    assert plain.k == REDACTED


def test_redaction_is_scoped_and_reference_counted(
    redactor: SecretRedactor, okx: ExchangeCredentials, caplog: pytest.LogCaptureFixture
) -> None:
    log = logging.getLogger("astra.test.scope")
    with caplog.at_level(logging.INFO):
        with redacting(okx):
            with redacting(okx):  # a second request with the same credentials
                log.info("a %s", SECRET)
            log.info("b %s", SECRET)  # still registered by the first
        log.info("c %s", "after-the-block")
    assert [r.getMessage() for r in caplog.records] == [
        f"a {REDACTED}",
        f"b {REDACTED}",
        "c after-the-block",
    ]
    assert repr(redactor) == "SecretRedactor(0 values registered)"


def test_redactor_variants_and_short_values() -> None:
    pem = PEM
    coinbase = ExchangeCredentials(
        Exchange.COINBASE, api_key="organizations/x/apiKeys/y", secret=pem
    )
    r = SecretRedactor()
    with r.redacting(coinbase, "abc", None):
        assert r.scrub(f"echo {pem!r}") == f"echo '{REDACTED}'"  # repr-escaped line breaks
        assert "MHcCAQEEIBkg4LVWM9nuwNSk3yIZaq" not in r.scrub(
            "line: MHcCAQEEIBkg4LVWM9nuwNSk3yIZaq"
        )
        assert r.scrub("abc") == "abc"  # too short to redact safely
        assert r.scrub("k=organizations%2Fx%2FapiKeys%2Fy") == f"k={REDACTED}"  # URL-encoded
    w = ExchangeCredentials(Exchange.ASTER, private_key=PRIVATE_KEY.upper().replace("0X", "0x"))
    with r.redacting(w):
        assert PRIVATE_KEY[2:] not in r.scrub(f"key {PRIVATE_KEY[2:]}")  # lower case, no 0x
    assert r.scrub(SECRET) == SECRET  # nothing registered any more


def test_redactor_on_a_handler_sees_records_of_child_loggers(okx: ExchangeCredentials) -> None:
    factory = logging.getLogRecordFactory()
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    parent = logging.getLogger("astra.test.handler")
    parent.addHandler(handler)
    r = SecretRedactor()
    r.install(parent)  # the filter goes on the handler too, not only on the logger
    try:
        with r.redacting(okx):
            logging.getLogger("astra.test.handler.child").error("sig=%s", SECRET)
    finally:
        r.uninstall(parent)
        parent.removeHandler(handler)
    assert stream.getvalue() == f"sig={REDACTED}\n"
    assert logging.getLogRecordFactory() is factory  # uninstall restored it
