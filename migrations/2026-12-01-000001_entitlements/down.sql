DROP TABLE IF EXISTS seat_assignments;
DROP TABLE IF EXISTS entitlements;
