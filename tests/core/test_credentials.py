"""The exchange credentials model (``astra.core.credentials``): what each venue needs, errors
that name fields, no secret in any repr or log line, no pickling, and the ccxt config checked
against ccxt's own signer."""

from __future__ import annotations

import asyncio
import copy
import logging
import pickle
from urllib.parse import parse_qs

import ccxt.async_support as ccxt_async
import pytest
from eth_account import Account

from astra.core import SIM_CODES, Exchange, InvalidCredentials, MissingCredentials, UnknownExchange
from astra.core.credentials import (
    ExchangeCredentials,
    allowed_for,
    describe_required,
    key_hint,
    required_for,
)

KEY = "AKIDkey0123456789abcdefWXYZ"
SECRET = "s3cr3t-Value_9f8e7d6c5b4a3928171605f4e3d2c1b0"
PASSPHRASE = "correct horse battery"
PRIVATE_KEY = "0x" + "4c0883a69102937d6231471b5dbb6204fe5129617082792ae468d01a3f362318"
SIGNER = Account.from_key(PRIVATE_KEY).address.lower()
ACCOUNT = "0x" + "Ab12" * 10
ALL_SECRETS = (SECRET, PASSPHRASE, PRIVATE_KEY, PRIVATE_KEY[2:])


def _no_secret(text: str) -> None:
    for s in ALL_SECRETS:
        assert s not in text


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
        **{code: [ks, wallet] for code in SIM_CODES},
    }
    assert set(expected) | {"SMART"} == {e.value for e in Exchange}
    with pytest.raises(UnknownExchange, match="member venue"):
        required_for("SMART")
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




# --- from fields, named by the caller ------------------------------------------------------


def test_from_fields_names_each_field_as_the_caller_does() -> None:
    names = {"api_key": "key-header", "secret": "secret-header", "passphrase": "pass-header",
             "private_key": "pk-header", "account": "account-header"}
    assert ExchangeCredentials.from_fields("OKX", {"api_key": " ", "secret": ""}, names) is None
    creds = ExchangeCredentials.from_fields(
        Exchange.OKX, {"api_key": f" {KEY} ", "secret": SECRET, "passphrase": PASSPHRASE}, names)
    assert creds is not None and (creds.api_key, creds.passphrase) == (KEY, PASSPHRASE)
    with pytest.raises(MissingCredentials) as exc:
        ExchangeCredentials.from_fields("OKX", {"api_key": KEY, "secret": SECRET}, names)
    assert exc.value.parameter == "pass-header" and "missing pass-header" in exc.value.message
    with pytest.raises(InvalidCredentials) as exc2:
        ExchangeCredentials.from_fields("BINANCE", {"api_key": KEY, "secret": SECRET,
                                                    "passphrase": PASSPHRASE}, names)
    assert exc2.value.parameter == "pass-header" and PASSPHRASE not in exc2.value.message
    assert describe_required(Exchange.SIM, names) == (
        "either key-header and secret-header, or pk-header (optionally with account-header)")
