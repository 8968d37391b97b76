import pytest

from astra.core import Exchange, normalize_token


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("XXBT", "BTC"),
        ("XBT", "BTC"),
        ("XDG", "DOGE"),
        ("XXDG", "DOGE"),
        ("XETH", "ETH"),
        ("XETC", "ETC"),
        ("XLTC", "LTC"),
        ("XXRP", "XRP"),
        ("XXLM", "XLM"),
        ("XXMR", "XMR"),
        ("XZEC", "ZEC"),
        ("XREP", "REP"),
        ("XMLN", "MLN"),
        ("ZUSD", "USD"),
        ("ZEUR", "EUR"),
        ("ZGBP", "GBP"),
        ("ZJPY", "JPY"),
        ("ZCAD", "CAD"),
        # Names that merely start with X or Z are real tokens, not prefixed ones.
        ("XTZ", "XTZ"),
        ("ZRX", "ZRX"),
        ("SOL", "SOL"),
    ],
)
def test_kraken(name, expected):
    assert normalize_token(name, "KRAKEN") == expected
    assert normalize_token(name, Exchange.KRAKEN) == expected


def test_kraken_prefixes_apply_only_to_kraken():
    assert normalize_token("XXBT", "BINANCE") == "XXBT"
    assert normalize_token("ZUSD", "COINBASE") == "ZUSD"
    assert normalize_token("XETH") == "XETH"
    assert normalize_token("XDG", "OKX") == "XDG"


def test_xbt_is_bitcoin_everywhere():
    assert normalize_token("XBT") == "BTC"
    assert normalize_token("XBT", "KUCOIN") == "BTC"
    assert normalize_token("xbt", "kraken") == "BTC"


def test_binance_bitcoin_cash_history():
    assert normalize_token("BCC", "BINANCE") == "BCH"
    assert normalize_token("BCHABC", "BINANCE") == "BCH"
    assert normalize_token("BCHSV", "BINANCE") == "BSV"
    assert normalize_token("BCC", "KRAKEN") == "BCC"


def test_unknown_names_pass_through_upper_cased():
    assert normalize_token("usdt") == "USDT"
    assert normalize_token("1000PEPE", "BINANCE") == "1000PEPE"
    assert normalize_token("BTC", "NOSUCHVENUE") == "BTC"


@pytest.mark.parametrize("name", ["XXBT", "XBT", "ZUSD", "BCC", "ETH", "XDG"])
@pytest.mark.parametrize("exchange", [None, "KRAKEN", "BINANCE"])
def test_idempotent(name, exchange):
    once = normalize_token(name, exchange)
    assert normalize_token(once, exchange) == once
