"""Amounts of money as the report shows them, in the config's ``currency`` (ISO 4217).

One rule, in every form of the report that people read (terminal, HTML page): whole currency
units with thousands separators, rounded half up, after the currency's symbol when it has an
unambiguous one (``$20,193``, ``€1,250``, ``£980``, ``¥15,000``, ``₹7,400``) and otherwise after
its code and a space (``CHF 20,193``, ``CAD 4,100``: a "$" alone would read as US dollars).
A negative amount reads ``-$1,200``. JSON and CSV keep the numbers (to the cent) and name the
currency once (JSON's ``currency``, CSV headers such as ``Value (USD)``).
"""

from __future__ import annotations

from decimal import ROUND_HALF_UP, Decimal
from typing import Final

# Active ISO 4217 codes, including funds, precious metals and the special codes (XDR, XXX).
_CODES = """
AED AFN ALL AMD ANG AOA ARS AUD AWG AZN BAM BBD BDT BGN BHD BIF BMD BND BOB BOV BRL BSD
BTN BWP BYN BZD CAD CDF CHE CHF CHW CLF CLP CNY COP COU CRC CUC CUP CVE CZK DJF DKK DOP
DZD EGP ERN ETB EUR FJD FKP GBP GEL GHS GIP GMD GNF GTQ GYD HKD HNL HTG HUF IDR ILS INR
IQD IRR ISK JMD JOD JPY KES KGS KHR KMF KPW KRW KWD KYD KZT LAK LBP LKR LRD LSL LYD MAD
MDL MGA MKD MMK MNT MOP MRU MUR MVR MWK MXN MXV MYR MZN NAD NGN NIO NOK NPR NZD OMR PAB
PEN PGK PHP PKR PLN PYG QAR RON RSD RUB RWF SAR SBD SCR SDG SEK SGD SHP SLE SLL SOS SRD
SSP STN SVC SYP SZL THB TJS TMT TND TOP TRY TTD TWD TZS UAH UGX USD USN UYI UYU UYW UZS
VED VES VND VUV WST XAF XAG XAU XBA XBB XBC XBD XCD XCG XDR XOF XPD XPF XPT XSU XTS XUA
XXX YER ZAR ZMW ZWG ZWL
"""
ISO_4217: Final = frozenset(_CODES.split())
# Symbols read one way only; every other code is written out.
SYMBOLS: Final = {"USD": "$", "EUR": "€", "GBP": "£", "JPY": "¥", "INR": "₹", "KRW": "₩"}


def is_currency(code: str) -> bool:
    return code in ISO_4217


def format_money(value: float | None, currency: str | None) -> str | None:
    """``20192.68`` in USD -> ``$20,193``; None stays None (the report shows it as missing).
    Without a currency the amount keeps two decimals, as any figure."""
    if value is None:
        return None
    if currency is None:
        return f"{value:,.2f}"
    whole = int(Decimal(str(value)).quantize(Decimal(1), rounding=ROUND_HALF_UP))
    sign, digits = ("-" if whole < 0 else ""), f"{abs(whole):,}"
    symbol = SYMBOLS.get(currency)
    return f"{sign}{symbol}{digits}" if symbol else f"{sign}{currency} {digits}"
