import { useEffect, useRef } from "preact/hooks";
import { userContext } from "../app";
import type { AppConfig } from "../config";
import { useStore } from "../lib/store";
import { location, navigate, parseRoute } from "../router";
import { AuthCallbackPage } from "./AuthCallbackPage";
import { CartPage } from "./CartPage";
import { CatalogPage } from "./CatalogPage";
import { LoginPage } from "./LoginPage";
import { NotFound } from "./NotFound";
import { OrderPage } from "./OrderPage";
import { OrdersPage } from "./OrdersPage";
import { ProductPage } from "./ProductPage";
import { Shell } from "./Shell";
import { SubscriptionsPage } from "./SubscriptionsPage";
import { Spinner } from "./components";
import { toast } from "./toasts";

export function App({ config }: { config: AppConfig }) {
  const loc = useStore(location);
  const ctx = useStore(userContext);
  const route = parseRoute(loc.pathname);
  const needsLogin = !ctx && route.name !== "login" && route.name !== "callback";

  // Signed out (or the session expired): to login, remembering where the user was.
  useEffect(() => {
    if (needsLogin) {
      const next = loc.pathname + loc.search;
      navigate(next === "/" ? "/login" : `/login?next=${encodeURIComponent(next)}`, { replace: true });
    } else if (ctx && route.name === "login") {
      navigate("/products", { replace: true });
    } else if (ctx && loc.pathname === "/") {
      navigate("/products", { replace: true });
    }
  }, [needsLogin, ctx, route.name, loc.pathname, loc.search]);

  // A checkout that was sent when the page went away: send it again with the same key (no second order).
  useEffect(() => {
    if (ctx?.checkout.interrupted()) {
      toast("info", "Finishing the checkout you started…");
      void ctx.checkout.submit();
    }
  }, [ctx]);

  // Move focus to the page on navigation, so keyboard and screen-reader users start at the top.
  const first = useRef(true);
  useEffect(() => {
    if (first.current) {
      first.current = false;
      return;
    }
    if (route.name !== "login" && route.name !== "callback") document.getElementById("main")?.focus({ preventScroll: true });
  }, [loc.pathname]);

  let page;
  if (route.name === "login") page = ctx ? <Spinner /> : <LoginPage config={config} />;
  else if (route.name === "callback") page = <AuthCallbackPage config={config} />;
  else if (!ctx) page = <Spinner />;
  else if (route.name === "products") page = <CatalogPage ctx={ctx} />;
  else if (route.name === "product") page = <ProductPage key={route.id} id={route.id} ctx={ctx} />;
  else if (route.name === "cart") page = <CartPage ctx={ctx} />;
  else if (route.name === "orders") page = <OrdersPage ctx={ctx} />;
  else if (route.name === "subscriptions") page = <SubscriptionsPage ctx={ctx} />;
  else if (route.name === "order") page = <OrderPage key={route.id} id={route.id} ctx={ctx} />;
  else page = <NotFound />;

  return <Shell ctx={ctx}>{page}</Shell>;
}
