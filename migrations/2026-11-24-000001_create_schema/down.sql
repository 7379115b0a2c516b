DROP TABLE outbox;
DROP TABLE order_items;
DROP TABLE orders;
DROP SEQUENCE order_id_blocks;
DROP TABLE products;
DROP TABLE customers;
