// Umbrella header of libpasyn-client: everything an application needs.
#pragma once

#include <pasyn/client.hpp>
#include <pasyn/connection.hpp>
#include <pasyn/errors.hpp>
#include <pasyn/read_pool.hpp>
#include <pasyn/server.hpp>
#include <pasyn/thread_transaction.hpp>
#include <pasyn/value.hpp>
#include <pasyn/version.hpp>
