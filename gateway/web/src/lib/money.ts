const formats = new Map<string, Intl.NumberFormat>();

/** Minor units as the currency's usual text, e.g. 1999 USD → "$19.99". */
export function formatMoney(cents: number | bigint, currency = "USD"): string {
  const code = currency || "USD";
  let format = formats.get(code);
  if (!format) {
    try {
      format = new Intl.NumberFormat(undefined, { style: "currency", currency: code });
    } catch {
      format = new Intl.NumberFormat(undefined, { style: "currency", currency: "USD" });
    }
    formats.set(code, format);
  }
  return format.format(Number(cents) / 100);
}
