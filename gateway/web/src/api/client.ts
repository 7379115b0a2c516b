import { Code, ConnectError, createClient, type Interceptor } from "@connectrpc/connect";
import { createGrpcWebTransport } from "@connectrpc/connect-web";
import { CatalogService } from "../gen/contoso/catalog/v1/catalog_pb";
import { OrderService } from "../gen/contoso/orders/v1/orders_pb";
import { OrderStatusService } from "../gen/contoso/notify/v1/notify_pb";
import { EntitlementService } from "../gen/contoso/entitlements/v1/entitlements_pb";
import { currentToken, expireSession } from "../auth/session";

/** Adds the signed-in user's token, and sends the user back to login when the gateway refuses it. */
const authInterceptor: Interceptor = (next) => async (req) => {
  const token = currentToken();
  if (token) req.header.set("authorization", `Bearer ${token}`);
  try {
    return await next(req);
  } catch (err) {
    if (token && ConnectError.from(err).code === Code.Unauthenticated) expireSession();
    throw err;
  }
};

/** grpc-web to the page's own origin: the gateway serves both the app and the APIs. */
export const transport = createGrpcWebTransport({
  baseUrl: typeof location === "undefined" ? "http://localhost" : location.origin,
  interceptors: [authInterceptor],
});

export const catalogClient = createClient(CatalogService, transport);
export const orderClient = createClient(OrderService, transport);
export const statusClient = createClient(OrderStatusService, transport);
export const entitlementClient = createClient(EntitlementService, transport);
