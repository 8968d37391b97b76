"""Exchange credentials: header parsing per venue, no secret in any repr, error or log line,
the log redactor (tracebacks included), and the ccxt config checked against ccxt's own signer."""

from __future__ import annotations

import asyncio
import copy
import io
import logging
import pickle
from urllib.parse import parse_qs

import ccxt.async_support as ccxt_async
import pytest
from eth_account import Account
from multidict import CIMultiDict

from astra.core import (
    AstraError,
    CredentialsForbidden,
    Exchange,
    InvalidCredentials,
    MissingCredentials,
    UnknownExchange,
)
from astra.trading.credentials import (
    HEADERS,
    REDACTED,
    ExchangeCredentials,
    SecretRedactor,
    allowed_for,
    credentials_from_headers,
    install_redactor,
    key_hint,
    redacting,
    required_for,
    resolve_credentials,
)

KEY = "AKIDkey0123456789abcdefWXYZ"
SECRET = "s3cr3t-Value_9f8e7d6c5b4a3928171605f4e3d2c1b0"
PASSPHRASE = "correct horse battery"
PRIVATE_KEY = "0x" + "4c0883a69102937d6231471b5dbb6204fe5129617082792ae468d01a3f362318"
SIGNER = Account.from_key(PRIVATE_KEY).address.lower()
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


# --- rules ---------------------------------------------------------------------------------


def test_required_for_each_venue() -> None:
    ks, ksp, wallet = {"api_key", "secret"}, {"api_key", "secret", "passphrase"}, {"private_key"}
    expected = {
        "BINANCE": [ks],
        "COINBASE": [ks],
        "KRAKEN": [ks],
        "HUOBI": [ks],
        "OKX": [ksp],
        "KUCOIN": [ksp],
        "ASTER": [ks, wallet],
        "SIM": [ks, wallet],
    }
    assert set(expected) == {e.value for e in Exchange}
    for exchange, alts in expected.items():
        assert [set(a) for a in required_for(exchange)] == alts
    assert allowed_for("ASTER") == {"api_key", "secret", "private_key", "account"}
    assert allowed_for(Exchange.OKX) == {"api_key", "secret", "passphrase"}
    with pytest.raises(UnknownExchange):
        required_for("NASDAQ")


def test_key_hint() -> None:
    assert key_hint("abcdefghijklmnopWXYZ") == "abcd…WXYZ"
    assert key_hint(ACCOUNT) == "0xAb12…Ab12"
    assert key_hint("abcdefgh") == "ab…gh"  # never more than a quarter each side
    assert key_hint("abc") == "…" and key_hint(None) == ""


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


def test_direct_construction_names_fields() -> None:
    with pytest.raises(MissingCredentials) as exc:
        ExchangeCredentials(Exchange.OKX, api_key=KEY, secret=SECRET)
    assert exc.value.parameter == "passphrase" and "missing passphrase" in exc.value.message
    with pytest.raises(InvalidCredentials) as exc2:
        ExchangeCredentials(Exchange.BINANCE, api_key=KEY, secret=123)  # type: ignore[arg-type]
    assert exc2.value.parameter == "secret" and "must be a string" in exc2.value.message


# --- nothing shows a secret ----------------------------------------------------------------


@pytest.fixture
def okx() -> ExchangeCredentials:
    return ExchangeCredentials(Exchange.OKX, api_key=KEY, secret=SECRET, passphrase=PASSPHRASE)


@pytest.fixture
def wallet() -> ExchangeCredentials:
    return ExchangeCredentials(Exchange.ASTER, private_key=PRIVATE_KEY, account=ACCOUNT)


def test_repr_str_format_show_no_secret(
    okx: ExchangeCredentials, wallet: ExchangeCredentials, caplog: pytest.LogCaptureFixture
) -> None:
    assert repr(okx) == "ExchangeCredentials(exchange='OKX', key='AKID…WXYZ')"
    assert str(wallet) == "ExchangeCredentials(exchange='ASTER', key='0xAb12…Ab12')"
    bare = ExchangeCredentials(Exchange.SIM, private_key=PRIVATE_KEY)
    assert repr(bare) == "ExchangeCredentials(exchange='SIM', key='private key')"
    texts = [
        repr(okx),
        str(okx),
        f"{okx}",
        f"{okx!r}",
        "%s %r" % (okx, okx),  # noqa: UP031
        "{} {!r}".format(okx, okx),  # noqa: UP032
        repr([okx, wallet, bare]),
        repr({"creds": wallet}),
        repr(okx.ccxt_config()),
        str(wallet.ccxt_config()),
    ]
    log = logging.getLogger("astra.test.creds")
    with caplog.at_level(logging.DEBUG, logger="astra.test.creds"):
        log.info("using %s", okx)
        log.info("using %r and %s", wallet, bare)
        log.debug("config %s", wallet.ccxt_config())
        log.info(okx)
    texts.append(caplog.text)
    texts += [r.getMessage() for r in caplog.records]
    assert len(caplog.records) == 4
    for text in texts:
        _no_secret(text)
        assert KEY not in text
    assert "AKID…WXYZ" in caplog.text


def test_not_picklable_and_copies_are_the_same(okx: ExchangeCredentials) -> None:
    for protocol in range(pickle.HIGHEST_PROTOCOL + 1):
        with pytest.raises(TypeError, match="cannot be pickled"):
            pickle.dumps(okx, protocol=protocol)
    with pytest.raises(TypeError):
        pickle.dumps(okx.ccxt_config())
    assert copy.copy(okx) is okx and copy.deepcopy({"c": okx})["c"] is okx
    with pytest.raises(AttributeError):
        okx.secret = "x"  # type: ignore[misc]
    assert not hasattr(okx, "__dict__")  # slots: vars() has nothing to dump


# --- ccxt ----------------------------------------------------------------------------------


def test_ccxt_config_key_secret_passphrase(okx: ExchangeCredentials) -> None:
    assert dict(okx.ccxt_config()) == {"apiKey": KEY, "secret": SECRET, "password": PASSPHRASE}
    binance = ExchangeCredentials(Exchange.BINANCE, api_key=KEY, secret=SECRET)
    assert dict(binance.ccxt_config()) == {"apiKey": KEY, "secret": SECRET}


def _ccxt_aster_sign(creds: ExchangeCredentials) -> dict[str, str]:
    """What ccxt's own aster client puts on the wire for a private POST."""
    config = creds.ccxt_config()
    ex = ccxt_async.aster(config)
    signed = ex.sign("order", ["fapiPrivate"], "POST", {"symbol": "BTCUSDT"})
    params = {k: v[0] for k, v in parse_qs(signed["body"]).items()}
    asyncio.run(ex.close())
    return params


def test_ccxt_config_wallet_with_account_signs_for_the_account(
    wallet: ExchangeCredentials,
) -> None:
    config = dict(wallet.ccxt_config())
    assert config["privateKey"] == PRIVATE_KEY and config["walletAddress"] == ACCOUNT.lower()
    assert config["options"]["signerAddress"] == SIGNER
    params = _ccxt_aster_sign(wallet)
    assert params["user"] == ACCOUNT.lower() and params["signer"] == SIGNER
    assert params["symbol"] == "BTCUSDT" and params["signature"].startswith("0x")


def test_ccxt_config_wallet_without_account_is_its_own_user() -> None:
    creds = ExchangeCredentials(Exchange.SIM, private_key=PRIVATE_KEY[2:])
    assert "cachedWalletAddress" not in creds.ccxt_config()["options"]
    params = _ccxt_aster_sign(creds)
    assert params["user"] == params["signer"] == SIGNER


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
