-- The benchmark's application-like table (scripts/bench-backup.sh, scripts/bench-pitr.sh):
-- a uuid, an email, amounts, timestamps, a sentence of words in random order and a random
-- hex token; about 430 bytes of SQL a row, compressing about 3:1 (less than pgbench's 6:1).
CREATE TABLE noise AS
    SELECT g AS id, md5(g::text)::uuid AS uid, 'user' || (random() * 1e6)::int || '@example.com' AS email,
      round((random() * 1e5)::numeric, 2) AS amount, now() - random() * interval '900 days' AS at,
      (SELECT string_agg((ARRAY['order','shipped','to','the','customer','invoice','paid','late','refund','item',
        'warehouse','address','changed','by','support','on','request','with','note','priority'])[1 + floor(random() * 20)::int], ' ')
       FROM generate_series(1, 45 + g % 2)) AS note,
      md5(random()::text) || md5(random()::text) AS token
    FROM generate_series(1, 1000000) g;
VACUUM ANALYZE;
