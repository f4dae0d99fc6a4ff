/* ktap_record.h - the output record writer (ktap_record.c). */
#ifndef KTAP_RECORD_H
#define KTAP_RECORD_H

#include "ktap_object.h"
#include "ktap_records.h"

/* A record is begun, filled with the put functions, and ended; one that
 * did not fit is taken back whole at the end and counted as a drop. */
size_t ktap_rec_begin(struct ktap_session *s, uint8_t kind);
void ktap_rec_end(struct ktap_session *s, size_t at);

void ktap_put_u32(struct ktap_session *s, uint32_t v);
void ktap_put_i64(struct ktap_session *s, int64_t v);
/* u32 n, then n values */
void ktap_put_values(struct ktap_session *s, const struct ktap_value *v, uint32_t n);
/* A table's live entries in slot order: the snapshot of values.Table. */
void ktap_put_entries(struct ktap_session *s, const struct ktap_table *t);
/* The final STATUS record: exit code, state, the error, the drop counters. */
void ktap_put_status(struct ktap_session *s);

#endif
