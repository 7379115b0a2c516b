//! `GET /images/products/{id}.svg`: a product's image, drawn here from its catalog entry (vendor
//! colour, exam code, category), so the shop never fetches an image from another host.

use axum::{
    extract::{Path, State},
    http::{HeaderValue, header},
    response::{IntoResponse, Response},
};

use super::{Caller, Rest, products};
use crate::problem::Problem;

const SVG: &str = "image/svg+xml";
/// Images change only with the catalog file; a day of caching spares the upstream.
const CACHE: &str = "public, max-age=86400";

/// Where the image of `product_id` is served (what the catalog's `imageUrl` says too).
pub(crate) fn url_for(product_id: &str) -> String {
    format!("/images/products/{}.svg", product_id.to_ascii_lowercase())
}

pub(crate) async fn product(
    State(rest): State<Rest>,
    caller: Caller,
    Path(file): Path<String>,
) -> Result<Response, Problem> {
    let id = file
        .strip_suffix(".svg")
        .filter(|id| !id.is_empty())
        .ok_or_else(Problem::not_found)?
        .to_ascii_uppercase();
    let product = products::fetch(&rest, &caller, id).await?;
    let svg = draw(&product.id, &product.vendor, &product.category);
    Ok((
        [
            (header::CONTENT_TYPE, HeaderValue::from_static(SVG)),
            (header::CACHE_CONTROL, HeaderValue::from_static(CACHE)),
        ],
        svg,
    )
        .into_response())
}

/// A 320x200 card: a gradient in the vendor's hue, the exam code large, vendor and category.
fn draw(id: &str, vendor: &str, category: &str) -> String {
    let hue = hue_of(vendor);
    let (id, vendor, category) = (escape(id), escape(vendor), escape(category));
    format!(
        r##"<svg xmlns="http://www.w3.org/2000/svg" width="320" height="200" viewBox="0 0 320 200" role="img" aria-label="{id} ({vendor})">
<defs><linearGradient id="g" x1="0" y1="0" x2="1" y2="1">
<stop offset="0" stop-color="hsl({hue},70%,42%)"/><stop offset="1" stop-color="hsl({hue2},65%,28%)"/>
</linearGradient></defs>
<rect width="320" height="200" rx="12" fill="url(#g)"/>
<circle cx="280" cy="36" r="58" fill="#fff" fill-opacity="0.08"/>
<text x="24" y="44" font-family="system-ui,sans-serif" font-size="16" fill="#fff" fill-opacity="0.85">{vendor}</text>
<text x="24" y="120" font-family="system-ui,sans-serif" font-size="40" font-weight="700" fill="#fff">{id}</text>
<text x="24" y="168" font-family="system-ui,sans-serif" font-size="15" fill="#fff" fill-opacity="0.85">{category}</text>
</svg>
"##,
        hue2 = (hue + 40) % 360,
    )
}

/// A stable hue per vendor (FNV-1a of the name), so a vendor's products share a colour.
fn hue_of(vendor: &str) -> u32 {
    let hash = vendor.bytes().fold(0x811c_9dc5_u32, |h, b| {
        (h ^ u32::from(b)).wrapping_mul(0x0100_0193)
    });
    hash % 360
}

fn escape(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_image_names_the_product_and_escapes_text() {
        let svg = draw("AZ-104", "Microsoft", "Labs & <Practice>");
        assert!(svg.starts_with("<svg"));
        assert!(svg.contains(">AZ-104<"));
        assert!(svg.contains("Labs &amp; &lt;Practice&gt;"));
        assert!(!svg.contains("<Practice>"));
    }

    #[test]
    fn a_vendor_keeps_its_colour() {
        assert_eq!(hue_of("Microsoft"), hue_of("Microsoft"));
        assert!(hue_of("Microsoft") < 360);
    }

    #[test]
    fn image_urls_are_lower_case_paths_on_this_origin() {
        assert_eq!(url_for("AZ-104"), "/images/products/az-104.svg");
    }
}
