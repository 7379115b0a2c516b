/** The wire messages turned into what the pages show: numbers for cents, strings for ids, plain statuses. */
import { timestampMs } from "@bufbuild/protobuf/wkt";
import { BillingPeriod, type Product } from "../gen/contoso/catalog/v1/catalog_pb";
import { OrderStatus, type Order } from "../gen/contoso/orders/v1/orders_pb";
import type { OrderStatusUpdate } from "../gen/contoso/notify/v1/notify_pb";
import type { Status, StatusReport } from "../orders/status";
import type { CartProduct } from "../cart/cart";

export interface ProductView {
  id: string;
  name: string;
  category: string;
  vendor: string;
  imageUrl: string;
  discountPercent: number;
  billingPeriod: string;
  subscription: boolean;
  priceCents: number;
  effectivePriceCents: number;
  currency: string;
}

export interface OrderLineView {
  productId: string;
  productName: string;
  quantity: number;
  unitPriceCents: number;
  lineTotalCents: number;
}

export interface OrderView {
  orderId: string;
  correlationId: string;
  status: Status | undefined;
  createdAt: number | undefined;
  lines: OrderLineView[];
  totalCents: number;
  currency: string;
}

export function billingLabel(p: BillingPeriod): string {
  return p === BillingPeriod.MONTHLY ? "Monthly" : p === BillingPeriod.ANNUAL ? "Annual" : "";
}

export function productView(p: Product): ProductView {
  return {
    id: p.id,
    name: p.name,
    category: p.category,
    vendor: p.vendor,
    imageUrl: p.imageUrl || `/images/products/${encodeURIComponent(p.id.toLowerCase())}.svg`,
    discountPercent: p.discountPercent,
    billingPeriod: billingLabel(p.billingPeriod),
    subscription: p.subscription,
    priceCents: Number(p.priceCents),
    effectivePriceCents: Number(p.effectivePriceCents),
    currency: p.currency || "USD",
  };
}

export function cartProduct(p: ProductView): CartProduct {
  return {
    productId: p.id,
    name: p.name,
    vendor: p.vendor,
    category: p.category,
    imageUrl: p.imageUrl,
    billingPeriod: p.billingPeriod,
    currency: p.currency,
    listPriceCents: Math.max(p.priceCents, p.effectivePriceCents),
    unitPriceCents: p.effectivePriceCents,
    discountPercent: p.discountPercent,
  };
}

export function statusFromProto(s: OrderStatus): Status | undefined {
  switch (s) {
    case OrderStatus.ACCEPTED:
      return "accepted";
    case OrderStatus.PROCESSING:
      return "processing";
    case OrderStatus.COMPLETED:
      return "completed";
    case OrderStatus.FAILED:
      return "failed";
    default:
      return undefined;
  }
}

export function orderView(o: Order): OrderView {
  return {
    orderId: o.orderId.toString(),
    correlationId: o.correlationId,
    status: statusFromProto(o.status),
    createdAt: o.createdAt ? timestampMs(o.createdAt) : undefined,
    lines: o.lines.map((l) => ({
      productId: l.productId,
      productName: l.productName,
      quantity: l.quantity,
      unitPriceCents: Number(l.unitPriceCents),
      lineTotalCents: Number(l.lineTotalCents),
    })),
    totalCents: Number(o.totalCents),
    currency: o.currency || "USD",
  };
}

export function orderReport(o: OrderView): StatusReport {
  return { correlationId: o.correlationId, status: o.status, orderId: o.orderId };
}

export function updateReport(u: OrderStatusUpdate): StatusReport {
  return {
    correlationId: u.correlationId,
    status: statusFromProto(u.status),
    orderId: u.orderId.toString(),
    reason: u.reason,
    occurredAt: u.occurredAt ? timestampMs(u.occurredAt) : undefined,
  };
}
