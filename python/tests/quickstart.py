# The seed's README quick start, verbatim (run by test_core.py in a temporary directory).
import pasyn_sqlite_core as sqlite

# Start writer server for write operations
server = sqlite.start_writer_server("mydb.sqlite")

# Create multiplexed client for writes
client = sqlite.MultiplexedClient(server.socket_path)

# Create local read-only connection for reads
read_conn = sqlite.connect("mydb.sqlite", sqlite.OpenFlags.readonly())

# Create a table (write operation -> goes to writer server)
client.executescript('''
    CREATE TABLE IF NOT EXISTS users (
        id INTEGER PRIMARY KEY,
        name TEXT,
        email TEXT
    )
''')

# Insert data (write operation -> goes to writer server)
client.execute(
    "INSERT INTO users (name, email) VALUES (?, ?)",
    ["Alice", "alice@example.com"]
)

# Query data (read operation -> synchronous, main thread)
rows = read_conn.execute_fetchall("SELECT * FROM users")
print(rows)  # [(1, 'Alice', 'alice@example.com')]

# Clean up
read_conn.close()
server.stop()
