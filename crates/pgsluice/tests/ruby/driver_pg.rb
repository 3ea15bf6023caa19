# Ruby pg (Debian ruby-pg) in the driver matrix (docs/clients.md), run by
# tests/drivers.rs through pgsluice in transaction pooling with SCRAM: named
# prepared statements (prepare/exec_prepared), a committed transaction, an error
# mid-transaction (25P02 until ROLLBACK), COPY in and out (copy_data), and a cancel
# (PG::Connection#cancel, 57014). Prints OK.
require 'pg'

SLEEP = 'select pg_sleep(10)'.freeze

def connect
  PG.connect(host: ENV.fetch('PGS_HOST'), port: ENV.fetch('PGS_PORT'),
             user: 'app', password: 'secret', dbname: 'appdb')
end

def check(cond, what)
  raise "assertion failed: #{what}" unless cond
end

def sqlstate(e)
  e.result.error_field(PG::PG_DIAG_SQLSTATE)
end

def wait_active(conn, needle)
  deadline = Time.now + 15
  while Time.now < deadline
    n = conn.exec_params("select count(*) from pg_stat_activity where state = 'active' " \
                         'and strpos(query, $1) > 0 and pid <> pg_backend_pid()', [needle])
    return if n.getvalue(0, 0).to_i.positive?

    sleep 0.02
  end
  raise "no backend ran #{needle}"
end

conn = connect
other = connect
conn.exec('create table matrix(id int primary key, label text)')

# Named prepared statements.
conn.prepare('twice', "select $1::int * 2, $2::text || '!'")
50.times do |i|
  r = conn.exec_prepared('twice', [i, "v#{i}"])
  check(r.values == [[(i * 2).to_s, "v#{i}!"]], "twice(#{i}): #{r.values}")
end

# A transaction, committed.
conn.transaction do |c|
  [1, 2, 3].each { |id| c.exec_params("insert into matrix values ($1, 'tx')", [id]) }
end
check(other.exec("select count(*) from matrix where label = 'tx'").getvalue(0, 0) == '3', 'committed')

# An error mid-transaction.
conn.exec('begin')
begin
  conn.exec('select 1/0')
  raise '1/0 succeeded'
rescue PG::DivisionByZero
  nil
end
begin
  conn.exec('select 1')
  raise 'a statement ran in an aborted transaction'
rescue PG::InFailedSqlTransaction => e
  check(sqlstate(e) == '25P02', sqlstate(e))
end
conn.exec('rollback')
check(conn.exec('select 42').getvalue(0, 0) == '42', 'after rollback')

# COPY in and out.
data = (1000...3000).map { |i| "#{i}\tcopy #{i}\n" }
conn.copy_data('copy matrix(id, label) from stdin') do
  data.each { |line| conn.put_copy_data(line) }
end
out = []
conn.copy_data('copy (select id, label from matrix where id >= 1000 order by id) to stdout') do
  while (row = conn.get_copy_data)
    out << row
  end
end
check(out == data, "copy out: #{out.length} rows")

# Cancel from another thread.
canceller = Thread.new do
  wait_active(other, SLEEP)
  conn.cancel
end
start = Time.now
begin
  conn.exec(SLEEP)
  raise 'pg_sleep(10) was not cancelled'
rescue PG::QueryCanceled => e
  check(sqlstate(e) == '57014', sqlstate(e))
end
elapsed = Time.now - start
canceller.join
check(elapsed < 9.5, "cancel took #{elapsed} s")
check(conn.exec('select 7').getvalue(0, 0) == '7', 'after cancel')

other.close
conn.close
puts 'OK'
