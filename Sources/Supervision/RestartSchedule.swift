/// The children of one supervisor that wait for their restart, earliest due first (ties in start
/// order): a binary min-heap whose records know their place in it (`ChildRecord.scheduleIndex`).
///
/// Adding a child, moving its due time and taking it out (it was terminated or removed while
/// waiting) are O(log n); finding the earliest due time is O(1). So a restart pass pays for the
/// children that are due, not for every child that waits: 100,000 children in backoff at once
/// do not make each pass a scan.
///
/// Nothing here releases a record: entries are only swapped, and a record taken out is handed
/// to the caller, who drops it after its access to the schedule has ended (the schedule lives
/// in the supervisor's unchecked bookkeeping; see `Supervisor.book`).
struct RestartSchedule {
    private var heap: [ChildRecord] = []

    /// Whether no child waits.
    var isEmpty: Bool { heap.isEmpty }

    /// How many children wait.
    var count: Int { heap.count }

    /// The child due first.
    var first: ChildRecord? { heap.first }

    /// Whether `record` waits in this schedule.
    func contains(_ record: ChildRecord) -> Bool {
        let index = record.scheduleIndex
        return index >= 0 && index < heap.count && heap[index] === record
    }

    /// Adds `record` at its `restartDue`. A record already waiting is moved instead.
    mutating func insert(_ record: ChildRecord) {
        if contains(record) {
            restore(at: record.scheduleIndex)
            return
        }
        record.scheduleIndex = heap.count
        heap.append(record)
        siftUp(from: heap.count - 1)
    }

    /// Moves a waiting `record` to a new due time.
    mutating func reschedule(_ record: ChildRecord, due: Int64) {
        record.restartDue = due
        if contains(record) { restore(at: record.scheduleIndex) }
    }

    /// Takes `record` out if it waits; the caller drops the returned reference.
    mutating func remove(_ record: ChildRecord) -> ChildRecord? {
        guard contains(record) else { return nil }
        return take(at: record.scheduleIndex)
    }

    /// Takes out the child due first; the caller drops the returned reference.
    mutating func removeFirst() -> ChildRecord? {
        heap.isEmpty ? nil : take(at: 0)
    }

    /// Empties the schedule and returns what waited, in no particular order.
    mutating func removeAll() -> [ChildRecord] {
        var taken: [ChildRecord] = []
        swap(&taken, &heap)
        for record in taken { record.scheduleIndex = -1 }
        return taken
    }

    private mutating func take(at index: Int) -> ChildRecord {
        let last = heap.count - 1
        if index != last {
            heap.swapAt(index, last)
            heap[index].scheduleIndex = index
        }
        let record = heap.removeLast()
        record.scheduleIndex = -1
        if index < heap.count { restore(at: index) }
        return record
    }

    /// Puts the entry at `index` back in heap order after its key changed.
    private mutating func restore(at index: Int) {
        if index > 0 && Self.precedes(heap[index], heap[(index - 1) / 2]) {
            siftUp(from: index)
        } else {
            siftDown(from: index)
        }
    }

    private static func precedes(_ a: ChildRecord, _ b: ChildRecord) -> Bool {
        a.restartDue != b.restartDue ? a.restartDue < b.restartDue : a.sequence < b.sequence
    }

    private mutating func siftUp(from start: Int) {
        var index = start
        while index > 0 {
            let parent = (index - 1) / 2
            guard Self.precedes(heap[index], heap[parent]) else { break }
            heap.swapAt(index, parent)
            heap[index].scheduleIndex = index
            index = parent
        }
        heap[index].scheduleIndex = index
    }

    private mutating func siftDown(from start: Int) {
        var index = start
        while true {
            let left = 2 * index + 1
            guard left < heap.count else { break }
            let right = left + 1
            var smallest = left
            if right < heap.count && Self.precedes(heap[right], heap[left]) { smallest = right }
            guard Self.precedes(heap[smallest], heap[index]) else { break }
            heap.swapAt(index, smallest)
            heap[index].scheduleIndex = index
            index = smallest
        }
        heap[index].scheduleIndex = index
    }
}
